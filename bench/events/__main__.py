"""`python -m bench.events`: run the event-stream throughput benchmark."""

from bench.events.run import main

raise SystemExit(main())
