"""Benchmark of the interaction reports: extract → transform → load against the stand-ins.

    python -m bench.reports [--interactions 1000000] [--hot 100000] [--no-scale-probe]

Starts its own stand-in stack in a temporary folder and seeds ``--interactions`` interactions
(about one user per 20), ``--hot`` of them in the hour before the seed's end (20:00-21:00 IST).
Then measures, in the same run:

1. **ours** — the 21:00 run of ``interaction_reports`` without the scheduler: the DAG's step
   functions (``leadflow.reports.pipeline.extract_step``, ``transform_step`` ×2, ``load_step`` ×2)
   called directly, each in a fresh process (multiprocessing, spawn) as each task is on a worker,
   so every task has its own peak RSS. Connections and Variables come from ``AIRFLOW_CONN_*`` /
   ``AIRFLOW_VAR_*`` environment variables (Airflow 3.3.1 resolves both outside a task, no
   metadata DB needed; the spreadsheet ids are created beforehand, as the first run would).
   The stages inside each task are timed by wrapping the names the pipeline module calls
   (``extract``, ``read_frame``/``write_frame``, the transforms, ``upsert``); MongoDB cursors
   are timed through a thin proxy around the database ``get_database`` returns; the Sheets
   client is a ``SheetsClient`` subclass that times the HTTP round trips. Each report is loaded
   twice: into an empty spreadsheet (every row added), then again (every row updated in place).
   After the extract task's figures are taken, its queries are replayed as raw BSON (no
   decoding, no frames), and again with short ``$in`` lists, to say how much is the stand-in;
2. **naive** — in one fresh process: ``pd.DataFrame(list(find()))`` of both collections, the same
   transforms over every session and user, and a full rewrite of each tab (``values.clear`` +
   one ``values.update``). Its rows for the keys ours touched must equal ours (by digest).
   Afterwards, unless ``--no-scale-probe``, ``upsert`` runs on the naive's full-collection
   reports (twice), to show ours' write calls at a large row count.

Sheets calls and request bytes come from ``client.calls`` and are cross-checked against the
stand-in's ``/_control/calls``. The stand-ins' RSS (``/proc/<pid>/status``) and CPU seconds
(``/proc/<pid>/stat``) are printed as well; they are separate processes, not in our peak RSS.

Modules: ``measure`` (RSS sampler, stages, cursor clock, timed Sheets client), ``child`` (the job
and the set-up every child process shares), ``ours`` (the DAG's tasks), ``naive`` (the peer),
``printout`` (the report) and ``__main__`` (the stack, the seed, the children in turn).
"""
