public enum _PMetamorphTokenizer {}
