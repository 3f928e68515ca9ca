public enum _PMetamorph {}
