"""Settings of the daphne and the Celery worker that `bench.jma_latency` starts: the project's own
(config.settings.base, configured by the same environment), with one change: the tasks go to a queue of this run's
own (BENCH_CELERY_QUEUE), so no task of another run or test sharing the Redis database reaches this worker, and no
task of this run reaches theirs."""

import os

from config.settings.base import *  # noqa: F403

CELERY_TASK_DEFAULT_QUEUE = os.environ["BENCH_CELERY_QUEUE"]

if os.environ.get("BENCH_JMA_TRACE"):  # bench.jma_latency --trace: the worker prints where its time goes
    from bench._jma_latency_trace import install

    install()
