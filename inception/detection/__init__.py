"""Object detection beside classification (the paper's section 8): annotated images, box geometry, region proposals
(Selective Search, cached), NMS and mAP.

Host-side numpy throughout; the models, the training loop and the commands are the classification ones. Every setting
(class list, proposal settings, IoU thresholds, context padding) comes from the config (configs/detection.py), never
from defaults here.
"""
