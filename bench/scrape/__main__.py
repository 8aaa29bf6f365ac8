"""Entry point: `python -m bench.scrape`."""

from bench.scrape.run import main

raise SystemExit(main())
