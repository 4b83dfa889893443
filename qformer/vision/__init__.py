"""Frozen vision models and what they share: the bridge's image encoders (encoders/), ImageNet
classifiers loaded as their origin requires, the COCO detector and activation-map regions, boxes and
their fusion, and the taxonomy that turns ImageNet classes into groups, genera and families. Used by
the bridge, the wildlife pipeline and grounded captions alike."""
