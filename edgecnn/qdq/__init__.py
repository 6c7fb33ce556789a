"""Q/DQ graphs, below the stages that use them: ptq writes a Q/DQ ONNX from activation ranges in a
backend's form (ONNX Runtime's quantizer does the work), forms converts a model between forms and folds
its weights for fast exact evaluation. quantize (calibration, sensitivity, QAT) builds on them; compile
converts a model to the form its target runs fast, bench times ONNX Runtime's own form beside a build.
"""
