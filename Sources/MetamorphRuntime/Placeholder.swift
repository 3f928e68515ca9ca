public enum _PMetamorphRuntime {}
