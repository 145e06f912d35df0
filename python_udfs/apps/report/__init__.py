"""The self-contained HTML report over a built warehouse (`make report`)."""
