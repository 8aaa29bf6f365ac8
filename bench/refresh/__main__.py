"""Entry point: `python -m bench.refresh`."""

from bench.refresh.run import main

raise SystemExit(main())
