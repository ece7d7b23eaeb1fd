#!/usr/bin/env bash
# Starts RabbitMQ, MariaDB and PostgreSQL when they are not running (the commands of this
# machine kind), then waits until each answers.
set -uo pipefail

if ! rabbitmqctl -q status >/dev/null 2>&1; then
  echo "services: starting RabbitMQ"
  rabbitmq-server -detached >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do rabbitmqctl -q status >/dev/null 2>&1 && break; sleep 1; done
fi
# An earlier run may have left the app stopped or a memory alarm set.
rabbitmqctl -q start_app >/dev/null 2>&1 || true
rabbitmqctl -q set_vm_memory_high_watermark 0.4 >/dev/null 2>&1 || true
rabbitmqctl -q await_startup >/dev/null 2>&1 || true

if ! mariadb -uroot -e 'select 1' >/dev/null 2>&1; then
  echo "services: starting MariaDB"
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd >/dev/null 2>&1 || true
  for _ in $(seq 1 60); do mariadb -uroot -e 'select 1' >/dev/null 2>&1 && break; sleep 1; done
fi
mariadb -uroot -e 'create database if not exists test' >/dev/null 2>&1 || true

# PostgreSQL (tests parametrized over both SQL servers): every cluster that is down.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  echo "services: starting PostgreSQL"
  pg_lsclusters -h 2>/dev/null | while read -r version cluster _port status _rest; do
    [ "$status" = "online" ] || pg_ctlcluster "$version" "$cluster" start >/dev/null 2>&1 || true
  done
  for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
if command -v psql >/dev/null 2>&1 && pg_isready -q -h 127.0.0.1 -p 5432; then
  psql -U postgres -h 127.0.0.1 -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null \
    | grep -q 1 || psql -U postgres -h 127.0.0.1 -c 'CREATE DATABASE test' >/dev/null 2>&1 || true
fi
exit 0
