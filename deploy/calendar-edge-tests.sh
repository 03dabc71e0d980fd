#!/usr/bin/env bash
# Runs the date-sensitive suites (budgets, the tick, quotas, rollups, finance views) with every
# clock in them reading the edges of the calendar: a year's last seconds, a month's last seconds
# (February), and the seconds before a daylight-saving change with TZ and PGTZ set to New York.
# The tests' servers take their clock from VOICEMETER_TEST_NOW (Tests' TestTime); periods are
# UTC calendar days and months, whatever TZ says. Run after `swift build --build-tests` (CI runs
# it after `swift test`).
set -euo pipefail
cd "$(dirname "$0")/.."

suites='BudgetEnforcementTests|BudgetPropagationTests|QuotaTests|AdmissionRetryTests|ServerPipelineTests|FinanceViewTests|FinanceAPITests|FinanceScaleTests|FakeClockTests'
edges=(
    "2026-12-31T23:59:50Z UTC"                 # a year's last seconds
    "2027-02-28T23:59:50Z UTC"                 # a month's last seconds
    "2026-11-01T05:59:50Z America/New_York"    # 01:59:50 EDT, ten seconds before clocks fall back
)
for edge in "${edges[@]}"; do
    read -r instant zone <<<"$edge"
    echo "== calendar edge: clocks read $instant, TZ=$zone"
    VOICEMETER_TEST_NOW="$instant" TZ="$zone" PGTZ="$zone" swift test --skip-build --filter "$suites"
done
