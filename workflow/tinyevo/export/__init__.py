"""Export of a trained net for the device, without torch: the Keras twin of a NetSpec and the
torch -> Keras weight transfer (``keras_model``), the full-integer int8 conversion, the int8 input
quantiser and the LiteRT runner of an int8 feature extractor (``int8``). The compression stage
exports with it; the scenarios and the TyBox test nets use its quantiser and converter.
Importing the package loads nothing heavy (Keras, TensorFlow and LiteRT load on first use).
"""
