"""``python -m mlforge`` runs the command line."""

from mlforge.cli import main

if __name__ == "__main__":
    main()
