"""AMQP 0-9-1 adapter around txamqp: the only package that imports txamqp."""
