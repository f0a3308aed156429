#!/bin/sh
echo "$GREETING from hoist"
cat /app/hello.txt
