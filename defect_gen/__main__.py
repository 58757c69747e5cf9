from defect_gen.cli import main

raise SystemExit(main())
