"""MariaDB 10.6+ and MySQL 8.0+: everything outboxkit knows about this database lives in this package.

``schema`` (DDL and emit's INSERT), ``store`` (the relay's store on asyncmy), ``ops`` (operator
SQL), ``inbox``, ``capture`` (triggers) and ``database`` (URLs, connections, migrations, emit
drivers for PyMySQL and asyncmy, error translation), handed out by :data:`DATABASE`.
"""

from __future__ import annotations

from outboxkit.stores.mariadb.database import DATABASE, MySqlConnection

__all__ = ["DATABASE", "MySqlConnection"]
