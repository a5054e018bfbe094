from autointerp.cli import main

raise SystemExit(main())
