from inner_onnx.cli import main

main()
