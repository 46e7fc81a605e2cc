"""JUnit XML for Jenkins' `junit` step: one test case per stage."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from legion_ci.records import (
    CANCELLED,
    FAILED,
    INTERRUPTED,
    PENDING,
    SKIPPED,
    RunRecord,
)


def _log_tail(record: RunRecord, log: str | None, lines: int = 20) -> str:
    if not log:
        return ""
    path = record.folder / log
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def render_junit(record: RunRecord) -> str:
    suite = ET.Element(
        "testsuite",
        name=f"legion-ci.{record.model['name']}",
        tests=str(len(record.stages)),
        failures=str(sum(s.status == FAILED for s in record.stages.values())),
        errors=str(sum(s.status in (CANCELLED, INTERRUPTED) for s in record.stages.values())),
        skipped=str(sum(s.status in (SKIPPED, PENDING) for s in record.stages.values())),
        time=f"{sum(s.duration_s or 0 for s in record.stages.values()):.3f}",
        timestamp=record.started,
    )
    props = ET.SubElement(suite, "properties")
    ET.SubElement(props, "property", name="run_id", value=record.id)
    ET.SubElement(props, "property", name="model.version", value=record.model["version"])
    for name, stage in record.stages.items():
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"legion-ci.{record.model['name']}",
            name=name,
            time=f"{stage.duration_s or 0:.3f}",
        )
        if stage.metrics or stage.tags:
            case_props = ET.SubElement(case, "properties")
            for metric, value in sorted(stage.metrics.items()):
                ET.SubElement(case_props, "property", name=f"metric.{metric}", value=str(value))
            for tag, value in sorted(stage.tags.items()):
                ET.SubElement(case_props, "property", name=f"tag.{tag}", value=str(value))
        if stage.status == FAILED:
            failure = ET.SubElement(case, "failure", message=stage.error or "stage failed")
            failure.text = _log_tail(record, stage.log)
        elif stage.status in (CANCELLED, INTERRUPTED):
            error = ET.SubElement(case, "error", message=stage.error or stage.status)
            error.text = _log_tail(record, stage.log)
        elif stage.status == SKIPPED:
            ET.SubElement(case, "skipped", message=stage.error or "not run")
        elif stage.status == PENDING:
            # Stage by stage (`legion-ci stage`), later stages have not run yet: not a pass.
            ET.SubElement(case, "skipped", message="not run yet in this run")
        if stage.log:
            out = ET.SubElement(case, "system-out")
            out.text = _log_tail(record, stage.log, 200)
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode")
