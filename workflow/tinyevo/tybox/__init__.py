"""TyBox stage: memory model, self-contained C++ generation (int8 feature extractor + float
classifier learning on the device), numpy reference of the on-device learning, harness driver.

Modules: ``model`` (read an int8 .tflite), ``memory`` (the TyBox memory model), ``codegen``
(write the C++ project), ``reference`` (numpy on-device learning), ``harness`` (build and drive
the generated host harness), ``testnets`` (small synthetic nets for tests and the bench).
"""
