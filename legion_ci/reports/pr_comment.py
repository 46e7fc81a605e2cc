"""The body of the one pull request comment legion-ci keeps up to date per model.

Its first line is a hidden HTML marker naming the model: the GitHub action finds the comment
it posted before by that line and edits it, instead of adding a comment on every push.
"""

from __future__ import annotations

from legion_ci.records import RunRecord


def marker(model_name: str) -> str:
    # Model names are validated as lower case, digits, `.`, `_` and `-`: safe inside a comment.
    return f"<!-- legion-ci:pr-comment:{model_name} -->"


def render_pr_comment(record: RunRecord) -> str:
    """The marker, then the run's Markdown summary (metrics, baseline deltas, trend charts).

    The summary written beside the run is preferred: it went through secret redaction when
    the run finished; it is rendered afresh only when missing (an older run folder)."""
    summary_md = record.folder / "reports" / "summary.md"
    if summary_md.is_file():
        body = summary_md.read_text(encoding="utf-8")
    else:
        from legion_ci.reports.markdown import render_markdown

        body = render_markdown(record)
    footer = f"<sub>Updated by legion-ci for run `{record.id}`"
    footer += f" at commit `{record.git_commit[:12]}`.</sub>" if record.git_commit else ".</sub>"
    return f"{marker(record.model['name'])}\n{body.rstrip()}\n\n{footer}\n"
