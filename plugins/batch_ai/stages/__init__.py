"""The stages of one run, one module per task of the DAG, as plain functions over a workload,
the ledger and a provider adapter:

    extract (intake) >> sample >> plan (recovery first) >> job[i](submit >> wait >> collect)
        >> retry_<n>(requeue (retry) >> plan >> job[i]) >> review (retry) >> quality_gate (gate)
        >> publish (batch_ai.publish) >> report (batch_ai.report)

with real-time calls (realtime) below a minimum, for halves of a refused job, and after a missed
deadline. Operators are thin faces over these; tests drive them too. Every stage is safe to
re-run: its effects are keyed in the ledger, so a retried or cleared task, or a later run, picks
up where the last attempt stopped instead of doing (or paying for) the work twice.
"""
