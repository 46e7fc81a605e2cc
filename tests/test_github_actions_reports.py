"""The trend charts and the pull request comment body the GitHub actions publish."""

from __future__ import annotations

from pathlib import Path

from conftest import SH_PIPELINE, run_cli, write

from legion_ci.records import RunRecord, StageRecord
from legion_ci.reports.pr_comment import marker
from legion_ci.reports.trends import render_trends

GATED = (
    SH_PIPELINE
    + """
    gates:
      rmse: {max: 0.8}
    baseline: baseline.json
"""
)


def _record(run_id: str, metrics: dict[str, float], model: str = "wine") -> RunRecord:
    train = StageRecord(
        name="train",
        integration="mlflow",
        status="succeeded",
        metrics=metrics,
        gates=[
            {"metric": "rmse", "ok": True, "message": "rmse ok"},
            {"metric": "r2", "ok": True, "message": "r2 ok"},
        ],
        baseline={"metrics": {"rmse": 0.75, "r2": 0.35}, "source": "baselines/wine.json"},
    )
    return RunRecord(
        id=run_id,
        pipeline="wine.yaml",
        pipeline_sha256="0" * 64,
        model={"name": model, "version": "1.0"},
        workspace="/nonexistent",
        status="succeeded",
        stages={"train": train},
    )


def test_trend_charts_each_gated_metric_over_recent_runs_against_the_baseline() -> None:
    history = [
        _record("20261101-000000-aaaaaa", {"rmse": 0.70, "r2": 0.30, "mae": 0.5}),
        _record("20261102-000000-bbbbbb", {"rmse": 0.9, "r2": 0.5}, model="other"),
        _record("20261103-000000-cccccc", {}),  # a run that failed before training
        _record("20261104-000000-dddddd", {"rmse": 0.65, "r2": 0.40}),
    ]
    current = _record("20261105-000000-eeeeee", {"rmse": 0.60, "r2": 0.45, "mae": 0.4})
    md = render_trends(current, history)
    charts = md.split("```mermaid")[1:]
    assert len(charts) == 2  # rmse and r2 are gated; mae is not
    rmse, r2 = charts
    assert "xychart-beta" in rmse
    assert '"rmse: last 3 runs (bars), baseline 0.75 (line)"' in rmse
    assert 'x-axis ["aaaaaa", "dddddd", "eeeeee"]' in rmse  # oldest first, this model only
    assert "bar [0.7, 0.65, 0.6]" in rmse
    assert "line [0.75, 0.75, 0.75]" in rmse
    assert 'y-axis "rmse" 0 --> ' in rmse
    top = float(rmse.split('y-axis "rmse" 0 --> ')[1].split()[0])
    assert top > 0.75
    assert "bar [0.3, 0.4, 0.45]" in r2


def test_trend_keeps_the_last_runs_and_needs_gates() -> None:
    history = [_record(f"20261101-0000{i:02d}-{i:06d}", {"rmse": 0.5 + i / 100}) for i in range(15)]
    current = _record("20261102-000000-ffffff", {"rmse": 0.4})
    md = render_trends(current, history, limit=10)
    assert "last 10 runs" in md
    assert md.split("```mermaid")[1].count(",") >= 9
    assert "000005" not in md and "000006" in md
    current.stages["train"].gates = []
    assert render_trends(current, history) == ""


def test_pr_comment_of_a_real_run_starts_with_its_marker_and_holds_the_summary(
    sh_project: Path,
) -> None:
    pipeline = write(sh_project / "pipeline.yaml", GATED)
    write(sh_project / "baseline.json", '{"rmse": 0.6, "r2": 0.8}')
    run_cli("run", str(pipeline)).assert_success()
    run_cli("run", str(pipeline)).assert_success()
    outcome = run_cli("report", "pr-comment", str(pipeline)).assert_success()
    body = outcome.out
    assert body.splitlines()[0] == marker("linear") == "<!-- legion-ci:pr-comment:linear -->"
    assert "| rmse | 0.5 | 0.6 | -0.1 |" in body
    assert "```mermaid" in body and "bar [0.5, 0.5]" in body and "line [0.6, 0.6]" in body
    latest = (sh_project / ".legion" / "latest").read_text().strip()
    assert f"run `{latest}`" in body
    summary_md = (sh_project / ".legion" / "reports" / "summary.md").read_text()
    assert summary_md.rstrip() in body


def test_pr_comment_of_a_missing_run_is_a_one_line_error(sh_pipeline: Path) -> None:
    outcome = run_cli("report", "pr-comment", str(sh_pipeline), "--run-id", "nope")
    outcome.assert_failed(2)
    assert "no runs yet" in outcome.err or "no run 'nope'" in outcome.err
