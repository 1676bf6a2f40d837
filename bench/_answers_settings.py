"""Settings of the daphne that `bench.answers` starts: the project's own (config.settings.base, configured by the
same environment), with a URLconf that adds the bare baseline view in front of the project's URLs. Middleware,
database pool, cache and server are therefore the same for our answer endpoint and for the baseline."""

from config.settings.base import *  # noqa: F403

ROOT_URLCONF = "bench._answers_urls"
