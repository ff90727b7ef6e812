"""Object detection beside classification (the paper's section 8): annotated images, box geometry, region proposals
(Selective Search, cached; MultiBox's), NMS and mAP.

Host-side numpy, except MultiBox's matching, loss and decoding (matching.py, multibox_loss.py, multibox_decode.py),
which the jitted steps trace; the models, the training loop and the commands are the classification ones (MultiBox
trains through the same loop as its own task, inception/tasks.py). Every setting (class list, proposal settings, IoU
thresholds, context padding, priors) comes from the config (configs/detection.py, configs/multibox.py), never from
defaults here.
"""
