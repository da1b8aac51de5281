#!/usr/bin/env bash
# System packages the test suite drives: Debian's Chromium (the review report is tested in a
# real headless browser) and a Java runtime (METEOR and the PTB tokenizer of pycocoevalcap).
# Installs what is missing when run as root with apt-get; otherwise says which tests will skip.
set -u
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v java >/dev/null 2>&1 || need+=(default-jre-headless)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
    || echo "warning: could not install ${need[*]}; the tests that need them will fail under CI"
else
  echo "note: ${need[*]} missing and not root: the tests that need them will be skipped"
fi
exit 0
