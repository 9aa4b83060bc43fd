"""`python -m lowlabel` is the same program as the `lowlabel` command."""

from __future__ import annotations


def main() -> None:
    from lowlabel.cli import run

    run()


if __name__ == "__main__":
    main()
