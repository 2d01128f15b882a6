# Debian's Chromium and ChromeDriver for the web UI's browser tests (tests/ui/test_browser.py),
# driven by Selenium (a dev extra) through /usr/bin/chromedriver. Nothing runs in the
# background: each test starts its own headless browser. No tool's own browser download
# is used (there is no network); screenshots land in $LAUNCHYARD_TEST_ARTIFACTS.
APT_PACKAGES="$APT_PACKAGES chromium chromium-driver"

start_chromium() {
  /usr/bin/chromium --version 2>/dev/null  # its wrapper script warns on stderr
  /usr/bin/chromedriver --version
  export LAUNCHYARD_TEST_ARTIFACTS="$CI_WORK/ui-screenshots"
  mkdir -p "$LAUNCHYARD_TEST_ARTIFACTS"
}

stop_chromium() {
  :
}
