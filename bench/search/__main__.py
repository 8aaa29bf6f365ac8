"""Entry point: `python -m bench.search`."""

from bench.search.run import main

raise SystemExit(main())
