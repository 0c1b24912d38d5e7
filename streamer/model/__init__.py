"""The model's side of one stream: the streaming tracker (``tracker``) with its per-object memory
(``memory``), prompts (``prompts``), frame preprocessing (``preprocess``), building the network
like the official predictor (``build``) and its checkpoints (``weights``)."""
