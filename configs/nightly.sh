#!/bin/sh
# The nightly job of configs/nightly.yaml, as cron or a CI step runs it (from the repository
# root):  sh configs/nightly.sh >> /var/log/evalkit.log 2>&1
#
# 1. evaluate tonight's predictions into reports/runs/$DAY (the first night also writes the
#    pinned baseline, reports/baseline); 2. compare them with the baseline; 3. history of
#    every night so far. Each step runs even when an earlier one failed a gate (exit 5: its
#    report is written and tonight belongs in the history); only an evaluate that wrote no
#    report stops the job. The exit code is the first error other than a failed gate (2 usage,
#    3 input, 4 output...), else 5 if any gate failed, else 0.
#
# Environment: EVALKIT (the command, default `evalkit`), REPORTS (default `reports`), DAY
# (default today, UTC), CONFIG (default configs/nightly.yaml).
E=${EVALKIT:-evalkit}
R=${REPORTS:-reports}
DAY=${DAY:-$(date -u +%F)}
C=${CONFIG:-configs/nightly.yaml}
rc=0
gate=0
step() {
    "$@"
    r=$?
    if [ "$r" -eq 5 ]; then gate=5; elif [ "$r" -ne 0 ] && [ "$rc" -eq 0 ]; then rc=$r; fi
    return "$r"
}
if [ ! -d "$R/baseline" ]; then
    step $E evaluate --config "$C" --out "$R/baseline" -q
fi
step $E evaluate --config "$C" --out "$R/runs/$DAY" --overwrite -q
r=$?
if [ "$r" -ne 0 ] && [ "$r" -ne 5 ]; then
    exit "$r"
fi
step $E compare "$R/baseline" "$R/runs/$DAY" --config "$C" --out "$R/compare" --overwrite -q
step $E history "$R/runs/*/" --config "$C" --out "$R/history" --overwrite -q
if [ "$rc" -ne 0 ]; then exit "$rc"; fi
exit "$gate"
