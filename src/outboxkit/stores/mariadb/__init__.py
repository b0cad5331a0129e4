"""MariaDB 10.6+ and MySQL 8.0+: everything outboxkit knows about this database lives in this package.

``driver`` (URLs, connections, error translation), ``schema`` (DDL and emit's INSERT), ``store``
(the relay's store on asyncmy) and ``leases``, ``ops`` (operator SQL), ``inbox``, ``capture``
(triggers) and ``database`` (migrations, emit drivers for PyMySQL and asyncmy), handed out by
:data:`DATABASE`.
"""

from __future__ import annotations

from outboxkit.stores.mariadb.database import DATABASE
from outboxkit.stores.mariadb.driver import MySqlConnection

__all__ = ["DATABASE", "MySqlConnection"]
