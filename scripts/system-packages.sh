#!/bin/sh
# Debian packages the tests need: Chromium (the book is checked as a browser
# renders it) and bubblewrap (the autograder's sandbox). Installs them when
# missing and this user may; otherwise says what to install.
set -e
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v bwrap    >/dev/null 2>&1 || missing="$missing bubblewrap"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
    echo "missing Debian packages:$missing (install them: sudo apt-get install$missing)" >&2
fi
