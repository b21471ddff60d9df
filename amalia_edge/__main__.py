from __future__ import annotations

from amalia_edge.cli import main

raise SystemExit(main())
