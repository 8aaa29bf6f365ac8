"""`python -m bench.memory`: run the exporter memory benchmark."""

from bench.memory.run import main

raise SystemExit(main())
