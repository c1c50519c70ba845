"""BibTeX of the papers the trainers implement: the ``_paper`` of each trainer class, which Hub model cards cite."""

HINTON_CITATION = """@article{hinton2015distilling,
  title   = {Distilling the Knowledge in a Neural Network},
  author  = {Hinton, Geoffrey and Vinyals, Oriol and Dean, Jeff},
  journal = {arXiv preprint arXiv:1503.02531},
  year    = {2015}
}"""

BAM_CITATION = """@inproceedings{clark-etal-2019-bam,
  title     = {{BAM}! Born-Again Multi-Task Networks for Natural Language Understanding},
  author    = {Clark, Kevin and Luong, Minh-Thang and Khandelwal, Urvashi and Manning, Christopher D. and Le, Quoc V.},
  booktitle = {Proceedings of the 57th Annual Meeting of the Association for Computational Linguistics},
  year      = {2019},
  pages     = {5931--5937},
  url       = {https://aclanthology.org/P19-1595}
}"""

ANNEALING_KD_CITATION = """@inproceedings{jafari-etal-2021-annealing,
  title     = {Annealing Knowledge Distillation},
  author    = {Jafari, Aref and Rezagholizadeh, Mehdi and Sharma, Pranav and Ghodsi, Ali},
  booktitle = {Proceedings of the 16th Conference of the European Chapter of the Association for Computational Linguistics},
  year      = {2021},
  pages     = {2493--2504},
  url       = {https://aclanthology.org/2021.eacl-main.212}
}"""

DDML_CITATION = """@article{liu2025ddml,
  title   = {{DDML}: Multi-Student Knowledge Distillation for Hate Speech},
  author  = {Liu, Ze and Shao, Zerui and Wang, Haizhou and Li, Beibei},
  journal = {Entropy},
  volume  = {27},
  number  = {4},
  pages   = {417},
  year    = {2025},
  doi     = {10.3390/e27040417}
}"""

ADAN_CITATION = """@article{chen-etal-2018-adversarial,
  title   = {Adversarial Deep Averaging Networks for Cross-Lingual Sentiment Classification},
  author  = {Chen, Xilun and Sun, Yu and Athiwaratkun, Ben and Cardie, Claire and Weinberger, Kilian},
  journal = {Transactions of the Association for Computational Linguistics},
  volume  = {6},
  pages   = {557--570},
  year    = {2018},
  url     = {https://aclanthology.org/Q18-1039}
}"""
PIOT_CITATION = """@article{piot2024efficient,
  title   = {Towards Efficient and Explainable Hate Speech Detection via Model Distillation},
  author  = {Piot, Paloma and Parapar, Javier},
  journal = {arXiv preprint arXiv:2412.13698},
  year    = {2024}
}"""
STEP_BY_STEP_CITATION = """@inproceedings{hsieh-etal-2023-distilling,
  title     = {Distilling Step-by-Step! Outperforming Larger Language Models with Less Training Data and Smaller Model
               Sizes},
  author    = {Hsieh, Cheng-Yu and Li, Chun-Liang and Yeh, Chih-Kuan and Nakhost, Hootan and Fujii, Yasuhisa and
               Ratner, Alex and Krishna, Ranjay and Lee, Chen-Yu and Pfister, Tomas},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2023},
  year      = {2023},
  pages     = {8003--8017},
  url       = {https://aclanthology.org/2023.findings-acl.507}
}"""
