from python_udfs.apps.report.build import main

raise SystemExit(main())
