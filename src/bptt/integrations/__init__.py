"""bptt inside other training frameworks: :mod:`bptt.integrations.lightning`
(``pip install 'bptt[lightning]'``). Each module imports its framework; this package
imports none."""
