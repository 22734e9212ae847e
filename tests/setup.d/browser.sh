#!/usr/bin/env bash
# Debian's Chromium and its WebDriver for tests/tests/browser.rs (the consent
# portal and the operator dashboard in a real headless browser).
apt_install chromium chromium-driver
