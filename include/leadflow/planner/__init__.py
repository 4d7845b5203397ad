"""``followup_planner``: decides *when* to follow up, from MongoDB, and puts the events on SQS.

* :mod:`leadflow.planner.rules`: the thresholds (Variable ``leadflow_followup_rules``), the
  planning point of a run and the nudge hours.
* :mod:`leadflow.planner.candidates`: the three rules as index-backed MongoDB reads.
* :mod:`leadflow.planner.enqueue`: the planner's own record (``followup_plans``) and the SQS sends.
* :mod:`leadflow.planner.run`: one planning run, as the DAG's task calls it.
"""
