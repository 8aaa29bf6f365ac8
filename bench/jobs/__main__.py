"""`python -m bench.jobs`: run the Jobs API benchmark."""

from bench.jobs.run import main

raise SystemExit(main())
