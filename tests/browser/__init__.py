"""Helpers for the end-to-end browser test: serving a notebook with Voila, driving Chromium with Playwright."""
