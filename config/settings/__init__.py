"""Settings: `base` reads every value from the environment; `production` and `test` only change defaults."""
