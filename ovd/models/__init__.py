from .detector import OpenVocabDetector

__all__ = ["OpenVocabDetector"]
