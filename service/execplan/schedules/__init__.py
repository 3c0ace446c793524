"""Schedules: start a plan on a cron expression or an interval, once per slot.

    spec.py        Spec: cron / interval, time zone, jitter, overlap, catch-up; its slots
    model.py       Definition, Progress and their bytes in the store
    scheduler.py   Scheduler: the durable loop, and create / pause / resume / backfill

The scheduler starts runs through a `Starter` (the engine) and keeps its state in
the store's schedule rows; see scheduler.py for how a slot fires exactly once.
"""
