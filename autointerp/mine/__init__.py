"""The mine stage: one streaming pass of the corpus through the SAE (accumulator, topk), activation
traces, the feature map, shards and their merge, and the write of statistics and examples.
Imports corpus, sae and store; nothing from later stages."""
