from inner_onnx.cli.app import main

main()
