"""Safety confirmation: incidents, dispatch, answers, tallies, instructions; jma/ for the feed (later issues)."""
