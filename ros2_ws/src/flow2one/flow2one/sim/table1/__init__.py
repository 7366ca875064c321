"""The analog of the paper's Table I on our sim tasks: closed-loop success and inference rate of every policy
kind, plus the modes each one used. `config` says what is evaluated, `run` evaluates it, `statistics` holds
the arithmetic over episodes and seed groups, `results` the typed report and its JSON form, `report` the
table, plots and the merging of separately evaluated files. `flow2one table1` (apps/table1.py) drives it."""
