#!/usr/bin/env bash
# Starts RabbitMQ and MariaDB when they are not running (the commands of this
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
exit 0
