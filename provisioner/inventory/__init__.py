"""Inventories: which hosts exist, how to reach them, and their variables.

Reads Ansible's inventory formats so an existing Ansible inventory works as is:

* YAML (``.yml``/``.yaml``/``.json``, or an extension-less file that parses as a
  YAML mapping): ``all: {hosts: {h: {vars}}, vars: {}, children: {g: {...}}}``.
* INI (anything else): ``[group]``, ``[group:vars]``, ``[group:children]``,
  ``host k=v ...`` lines (values that are Python literals become ints, bools,
  lists...; ``true`` stays a string, as in Ansible), ``#``/``;`` comments.
* A directory: every file in it, sorted, recursively (hidden files, ``*.md``,
  ``*.txt``, ``*.cfg``, ``*~``... and group_vars/host_vars skipped).
* A host list string ``'web1,web2:2222,'``.
* No source at all: just ``localhost`` with a local connection.

Host names may hold ranges (``web[01:03].example.com``, ``db-[a:c]``,
``[1:9:2]``) and a port (``web1:2222``, ``[fe80::1]:2222``).

``group_vars/`` and ``host_vars/`` beside each inventory file (inside an
inventory directory) are read: ``NAME``, ``NAME.yml``, ``NAME.yaml`` or
``NAME.json``, or a directory ``NAME/`` whose files are all merged in name order.

Variable precedence is Ansible's (later wins, top-level keys replace):
inventory ``all`` vars < inventory group vars (groups sorted by depth, then
``ansible_group_priority``, then name) < ``group_vars/all`` < ``group_vars/GROUP``
(same order) < inventory host vars < ``host_vars/HOST``.

Connection variables. Each `Host` field comes from our own ``provision_*``
variable if set, else from the Ansible ones (the later listed winning, as in
Ansible), else the default:

=============  =======================  ==================================================  =========
Host field     provision variable       Ansible variables                                   default
=============  =======================  ==================================================  =========
address        provision_host           ansible_host, ansible_ssh_host                      host name
port           provision_port           ansible_port, ansible_ssh_port                      22
user           provision_user           ansible_user, ansible_ssh_user                      None (you)
key_file       provision_key_file       ansible_private_key_file,                           None
                                        ansible_ssh_private_key_file
connection     provision_connection     ansible_connection (ssh/smart/paramiko -> 'ssh',    'ssh'
                                        local -> 'local'; anything else is an error)
become         provision_become         ansible_become (yes/no/true/false/1/0...)           False
become_user    provision_become_user    ansible_become_user                                 None (root)
known_hosts    provision_known_hosts    (none)                                              None
=============  =======================  ==================================================  =========

``Host.vars`` holds every merged variable plus ``inventory_hostname``,
``inventory_hostname_short`` and ``group_names`` (sorted, without ``all``).

Host patterns (`Inventory.select`) follow Ansible: ``all``/``*``, group or host
names, globs, ``~regex``, ``a:b``/``a,b`` unions, ``a:&b`` intersections,
``a:!b`` exclusions (applied in that order), ``group[0]``/``group[1:3]``
subscripts. A term matching nothing raises SpecError (Ansible only warns).
"""

from __future__ import annotations

from .hostrange import RangeError, expand_host_pattern, expand_host_range
from .loader import load_inventory
from .model import CONNECTION_VARS, Group, Host, Inventory, split_host_pattern

__all__ = [
    "CONNECTION_VARS",
    "Group",
    "Host",
    "Inventory",
    "RangeError",
    "expand_host_pattern",
    "expand_host_range",
    "load_inventory",
    "split_host_pattern",
]
