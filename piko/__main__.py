"""python -m piko -> piko.cli.main()."""

from piko.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
