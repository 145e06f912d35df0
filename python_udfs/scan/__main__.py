from python_udfs.scan.cli import main

main()
